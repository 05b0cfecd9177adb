"""multipos.vision"""
