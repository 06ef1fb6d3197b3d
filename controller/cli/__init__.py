"""`kubectl-modelrollout`: see and steer ModelRollouts from a terminal or a CI pipeline.

`render` holds the pure formatting (values in, text out), `kube` the API calls, `main` the
command line that joins them.
"""
