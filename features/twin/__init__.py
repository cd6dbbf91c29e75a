"""riskroute.features.twin"""
