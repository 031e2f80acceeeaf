"""The deployment tests' servers (deployment_support.py): a session's PostgreSQL and team deployment."""

from deployment_support import postgres_server, team_deployment  # noqa: F401
