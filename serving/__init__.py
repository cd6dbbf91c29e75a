"""riskroute.serving"""
