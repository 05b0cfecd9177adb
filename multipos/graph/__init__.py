"""multipos.graph"""
