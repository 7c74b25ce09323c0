"""Provider workers: one pool per provider, calling upstreams and streaming replies back."""
