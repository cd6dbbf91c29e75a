"""The ops console: server-rendered pages for the people who decide on proposals."""
