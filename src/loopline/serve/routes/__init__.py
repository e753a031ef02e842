"""The HTTP routes of ``loopline serve``, one module per resource.

``health`` (liveness, readiness, Prometheus metrics), ``models`` (served models) and
``predict`` (``POST /v1/models/{name}/predict``); ``recommend`` and ``feedback`` add the
recommender's and the feedback loop's routes. Each module exposes an ``APIRouter`` named
``router``; :func:`loopline.serve.app.create_app` includes them all behind the access gate.
"""
