"""Inspector: turns a monitor's host event into actions on the Controller and notifications.

``service.InspectorService`` is the logic (event log, host map, fault handling),
``api`` its REST API, ``cli`` the ``doctor-inspector`` daemon.
"""
