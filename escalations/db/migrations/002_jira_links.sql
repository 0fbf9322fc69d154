-- The Jira issue of an escalation: created by its first Jira notification, commented on by
-- the later ones (activities/channels/jira.py). One per escalation.

CREATE TABLE jira_issues (
    escalation_id text        PRIMARY KEY,
    ticket_id     text        NOT NULL,
    issue_key     text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jira_issues_ticket ON jira_issues (ticket_id);
