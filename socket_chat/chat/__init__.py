"""The chat's rules, with no sockets and no threads of their own: the room, a
member's session, names, presence, commands, limits and how text is shown."""
