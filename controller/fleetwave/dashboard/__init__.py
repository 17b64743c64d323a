"""The web dashboard at `/`: pages over the API's `ControlPlane`, a live stream, shipped assets.

`routes.mount` adds it to the API application; `live.LiveFeed` is what the engine's
event and status hooks feed; `views` computes each bounded page.
"""
