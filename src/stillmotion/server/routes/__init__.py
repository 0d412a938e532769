"""REST routers, one module per resource; every route is a few lines over ``JobService``."""
