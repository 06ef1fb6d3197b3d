"""Pre-traffic gates: contract and golden set. See docs/gates.md."""
