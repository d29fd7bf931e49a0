"""The projections: what the workers build from the event log, as functions of the events.

The timeline worker runs `timeline.Timeline` (follower graph, posts, homes, DMs, routing,
live announcements), the audit worker `audit.AuditIndex`; replay runs the same code to
rebuild them (muster.ops.replay). `families` says which keys each one owns. They live in
shared/ because both a worker and the ops process use them; a service imports them, never
another service.
"""
