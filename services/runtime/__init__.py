"""The harness every service shares: bus connection, endpoints, JetStream bootstrap, settings, admin app."""
