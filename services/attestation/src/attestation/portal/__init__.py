"""The supplier and procurement web portal, served under ``/portal``.

Server-rendered HTML (jinja2, autoescaped), one stylesheet, no JavaScript. Suppliers sign in
with their OAuth2 client credentials and see their own attestations, upload new ones through
the API's own ingest route, read their SLA terms and scorecard and answer notices;
procurement, auditors and registry approvers see every supplier's scorecard and detail.

Wired into the app with ``routers=[api.router, portal.router]``.
"""

from fastapi import APIRouter

from attestation.portal import auth_routes, pages

router = APIRouter()
# Sign-in first: pages ends with the portal's catch-all 404.
router.include_router(auth_routes.router)
router.include_router(pages.router)
