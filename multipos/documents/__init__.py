"""multipos.documents"""
