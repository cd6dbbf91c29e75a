"""riskroute.approvals"""
