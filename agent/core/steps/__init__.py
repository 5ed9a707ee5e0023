"""One module per step of the graph; agent/graph.py wires them."""
