"""The pure decision core: events and a clock in, decisions out.

Nothing here reads the clock, the network, psutil or the database.
"""
