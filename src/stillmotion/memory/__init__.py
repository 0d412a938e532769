"""Memory planning: measure the device, estimate a request's peak, pick a plan, carry it out, recover."""
