"""Stand-ins for outside services, for the dev stack and the tests: an SMTP sink
and a simulator of the ministry's NIK API. Never part of a production deployment."""
