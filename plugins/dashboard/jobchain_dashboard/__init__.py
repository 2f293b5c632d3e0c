"""jobchain-dashboard: a web dashboard for any jobchain backend, safe by default.

``jobchain dashboard --backend URL`` serves it; :func:`create_app` builds it
as an ASGI application to mount in yours. See docs/dashboard.md.
"""

from jobchain_dashboard.security import Auth
from jobchain_dashboard.web import DashboardConfig, create_app

__all__ = ["Auth", "DashboardConfig", "create_app"]
