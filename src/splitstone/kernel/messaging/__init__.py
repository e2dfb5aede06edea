"""Events that are never lost and never applied twice, and durable jobs.

outbox (per publishing module) → relay → transport (in-process or NATS JetStream) → inbox (per
subscribing module) → handler, run in the same transaction that marks the inbox row done.
"""
