"""Routing for `model: auto`: request features -> complexity tier -> the cheapest fitting model.

`features` reads a request, `router` decides (pure: catalog, tenant policy, feedback advice and
the request id in; a RouteDecision or a rejection out), `advice` keeps the feedback loop's
newest advice per (route, model)."""
