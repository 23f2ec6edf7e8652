"""Kubernetes side of the router, for clusters without the OpenShift operator.

`egressrouter` reads and validates EgressRouter objects the way the API server
would; `render` turns them into the objects the operator would create (plus the
Service it never creates) and renders the installer that puts the plugin on
the nodes. Both are pure: no cluster access, no files, no click.
"""
