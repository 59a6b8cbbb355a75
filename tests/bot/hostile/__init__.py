"""
Issue 12: a server full of strangers, through the fake Discord and the real discord.py.

Every hostile action in these modules is checked three ways: the REST payloads the fake received (nobody is
pinged who was not meant to be; conftest.py checks it after every test), what the member saw (an ephemeral
refusal that says what and, for budgets, when), and that nothing on disk or in the database grew beyond what
the action is allowed to cost (arena.py holds the running bot and these checks). One module a theme.
"""
