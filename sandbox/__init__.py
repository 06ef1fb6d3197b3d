"""The sandbox: a complete local environment for model rollouts, and the scripted demo on it.

    python -m sandbox up      # start everything in the background (`make sandbox`)
    python -m sandbox down    # stop it (`make sandbox-down`)
    python -m sandbox.demo    # the two scripted rollouts (`make demo`)

See docs/sandbox.md.
"""
