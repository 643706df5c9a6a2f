"""The operator console: bid review before gate closure, the fleet and dispatch, in a browser.

How it is built, and why: server-rendered Jinja2 templates (Starlette ships the
integration) with htmx for partial updates and uPlot for the plots, both vendored into
``vpp/console/static`` — no JavaScript build chain, no CDN, every asset in the package. A
page is HTML the server renders from the same stores and the same checks as the API
(:func:`vpp.bidding.review.apply_edit` for curve edits, :meth:`BidStore.review` for
approvals), so the console cannot do what the API refuses; lists refresh themselves with
htmx polling (``every 10s``), which needs no connection held open per viewer, unlike
server-sent events. The pages are plain forms and tables: usable from the keyboard, with
labels on every control and a high-contrast palette.

Sign-in takes an API key once and keeps it server-side (:mod:`vpp.console.sessions`): the
browser holds an opaque session id in an HttpOnly, SameSite=Strict cookie, never the key
and never anything in a URL. Every request re-verifies the key (revocation takes effect at
once) and forms carry a per-session CSRF token.
"""
