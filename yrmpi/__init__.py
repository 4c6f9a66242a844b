"""yrmpi"""
