-- Jira back-sync (POST /integrations/jira/webhook, escalations/api/jira.py): a comment or a
-- status transition on an escalation's Jira issue comes back as a note or a resolve.

-- The webhook names the issue; its escalation is found by key.
CREATE INDEX jira_issues_issue_key ON jira_issues (issue_key);

-- Comments the Jira channel posted itself (activities/channels/jira.py): they never come back
-- as notes. author_account_id is who Jira says wrote them (the integration user), so any
-- comment by that account is recognised as ours too.
CREATE TABLE jira_own_comments (
    comment_id        text        PRIMARY KEY,
    issue_key         text        NOT NULL,
    author_account_id text,
    notification_key  text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jira_own_comments_author ON jira_own_comments (author_account_id);

-- What the webhook has acted on: a delivery (webhook:<X-Atlassian-Webhook-Identifier>), a
-- comment (comment:<id>) or a change (changelog:<id>). Seen again, it changes nothing.
CREATE TABLE jira_webhook_receipts (
    receipt       text        PRIMARY KEY,
    issue_key     text        NOT NULL,
    escalation_id text        NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
