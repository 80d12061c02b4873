"""talos"""
