"""ApiVersions (key 18), versions 0-4.

Behaviour: lists every API in the registry with the versions we accept (Produce advertises 0 so
librdkafka keeps compression on). An unknown ApiVersions version is answered by the dispatcher
with a v0 body carrying error 35 (UNSUPPORTED_VERSION) and the real ranges (KIP-511).
Version notes: v3+ is flexible but its response still uses response header v0.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import REGISTRY, RequestContext, api
from nerve.protocol.messages import build, response_class


def api_versions_response(version: int, error_code: int = 0) -> Any:
    keys = [
        {"api_key": s.key, "min_version": s.advertised_min, "max_version": s.max_version}
        for s in sorted(REGISTRY.values(), key=lambda s: s.key)
    ]
    return build(
        response_class(18, version),
        error_code=error_code,
        api_keys=keys,
        throttle_time=0,
        supported_features=(),
        finalized_features_epoch=-1,
        finalized_features=(),
        zk_migration_ready=False,
    )


@api(18, "ApiVersions", 0, 4)
async def handle_api_versions(ctx: RequestContext, request: Any) -> Any:
    return api_versions_response(ctx.version)
