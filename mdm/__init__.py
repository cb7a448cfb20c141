"""Apple MDM protocol server: enrollment, SCEP identity, check-in, commands, pushes.

Public surface: `register` (Flask wiring), `service` (admin operations),
`protocol` (pure message parsing/building), `push` (waking devices).
"""


def register(app, hooks, instance) -> None:
    from . import api, identity, scep_views, views

    app.register_blueprint(views.bp)
    app.register_blueprint(scep_views.bp)
    app.register_blueprint(api.bp)
    identity.register(app, hooks, instance)
