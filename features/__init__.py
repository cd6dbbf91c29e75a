"""riskroute.features"""
