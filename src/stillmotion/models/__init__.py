"""Model families: registry data (registry.py), tiny random-weight builds (tiny.py), adapters."""
