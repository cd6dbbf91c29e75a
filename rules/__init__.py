"""riskroute.rules"""
