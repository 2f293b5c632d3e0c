"""jobchain-http: an HTTP gateway in front of any jobchain backend, and the ``http://`` backend.

``jobchain http serve`` runs the gateway (:func:`jobchain_http.gateway.create_app`
builds it as an ASGI application); ``App(backend="http://host:8080")`` and
``jobchain worker --backend http://host:8080`` use it through
:class:`HttpBackend`; ``jobchain http push`` / ``pull`` move files through its
line queues. See docs/http.md.
"""

from jobchain_http.client import HttpBackend
from jobchain_http.gateway import GatewayConfig, create_app

__all__ = ["GatewayConfig", "HttpBackend", "create_app"]
