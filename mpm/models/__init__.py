"""All models, imported here so metadata (and Alembic) sees every table."""
from mpm.models.company import ApiToken, AuditEntry, Company, PasswordLink, User
from mpm.models.people import CustomerGroup, CustomerType, MiniGrid, Person, PhoneNumber
from mpm.models.broadcast import Broadcast
from mpm.models.gateway import GatewaySetting
from mpm.models.sms import AppliedReports, ParkedReport, Sms, SmsEvent
from mpm.models.transactions import Transaction
from mpm.models.maintenance import MaintenanceTicket, TicketComment
from mpm.models.templates import SmsTemplate
from mpm.models.insight import RollupMark, SmsRollup

__all__ = [
    "ApiToken", "AppliedReports", "AuditEntry", "Broadcast", "Company", "CustomerGroup", "CustomerType",
    "GatewaySetting", "MiniGrid", "ParkedReport", "PasswordLink", "Person", "PhoneNumber", "Sms", "SmsEvent", "User",
    "Transaction", "MaintenanceTicket", "TicketComment", "SmsTemplate", "RollupMark", "SmsRollup",
]
