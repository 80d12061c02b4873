"""sops"""
