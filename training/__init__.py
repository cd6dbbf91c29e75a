"""riskroute.training"""
