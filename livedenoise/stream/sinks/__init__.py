"""sinks subpackage."""
