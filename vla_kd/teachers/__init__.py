"""Teacher policies: scripted experts now; VLA teachers later."""
