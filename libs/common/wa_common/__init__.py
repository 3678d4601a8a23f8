"""Shared building blocks of the WhatsApp multi-instance services.

Only what every service needs lives here (DESIGN.md, "Services"): settings base, structured
logging, the RabbitMQ bus client and its topology, the event/command/query schemas, Prometheus
and health helpers, the service runtime, and the SQL engine helpers.
"""

__version__ = "0.1.0"
