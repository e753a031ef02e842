"""Transport implementations; :func:`open_transport` picks one from its config."""
