"""Real local processes for tests, benchmarks and the sandbox, all on 127.0.0.1.

Nothing here is a mock: each module starts the real program (kube-apiserver and etcd, Prometheus,
model servers) and stops it again, leaving no process behind.
"""
