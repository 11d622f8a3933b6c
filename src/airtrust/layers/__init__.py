"""Layer contents: reading trust-store layouts from layers, writing the CA layer (pure)."""
