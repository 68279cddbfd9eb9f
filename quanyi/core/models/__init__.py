"""Persistent domain model (SQLAlchemy 2 declarative), one module per aggregate.

``base`` holds the declarative base, naming convention and column types; the other modules
group the mapped classes and their status enums. Every name is re-exported here, and
importing this package imports every module, so ``Base.metadata`` holds every table and
string-named relationships resolve.
"""

from quanyi.core.models.base import NAMING as NAMING
from quanyi.core.models.base import Base as Base
from quanyi.core.models.base import IdType as IdType
from quanyi.core.models.base import UTCDateTime as UTCDateTime
from quanyi.core.models.base import utcnow as utcnow
from quanyi.core.models.books import JournalEntry as JournalEntry
from quanyi.core.models.books import Posting as Posting
from quanyi.core.models.books import Settlement as Settlement
from quanyi.core.models.books import SettlementRow as SettlementRow
from quanyi.core.models.catalog import BundleComponent as BundleComponent
from quanyi.core.models.catalog import Channel as Channel
from quanyi.core.models.catalog import ChannelKind as ChannelKind
from quanyi.core.models.catalog import ChannelPrice as ChannelPrice
from quanyi.core.models.catalog import Product as Product
from quanyi.core.models.catalog import ProductKind as ProductKind
from quanyi.core.models.distributors import BalanceEntry as BalanceEntry
from quanyi.core.models.distributors import Commission as Commission
from quanyi.core.models.distributors import CommissionRate as CommissionRate
from quanyi.core.models.distributors import CommissionStatus as CommissionStatus
from quanyi.core.models.distributors import CostPrice as CostPrice
from quanyi.core.models.distributors import DigestedOrder as DigestedOrder
from quanyi.core.models.distributors import Distributor as Distributor
from quanyi.core.models.distributors import DistributorDigest as DistributorDigest
from quanyi.core.models.distributors import DistributorInvite as DistributorInvite
from quanyi.core.models.distributors import Withdrawal as Withdrawal
from quanyi.core.models.distributors import WithdrawalStatus as WithdrawalStatus
from quanyi.core.models.partners import ApiNonce as ApiNonce
from quanyi.core.models.partners import Partner as Partner
from quanyi.core.models.partners import PartnerKey as PartnerKey
from quanyi.core.models.partners import PartnerOrder as PartnerOrder
from quanyi.core.models.partners import PartnerWebhook as PartnerWebhook
from quanyi.core.models.platform import AuditHead as AuditHead
from quanyi.core.models.platform import AuditRecord as AuditRecord
from quanyi.core.models.platform import KeyCheck as KeyCheck
from quanyi.core.models.platform import Lease as Lease
from quanyi.core.models.platform import OutboxMessage as OutboxMessage
from quanyi.core.models.platform import OutboxStatus as OutboxStatus
from quanyi.core.models.platform import User as User
from quanyi.core.models.pricing import Coupon as Coupon
from quanyi.core.models.pricing import CouponCode as CouponCode
from quanyi.core.models.pricing import CouponUse as CouponUse
from quanyi.core.models.pricing import CouponUseStatus as CouponUseStatus
from quanyi.core.models.pricing import DiscountKind as DiscountKind
from quanyi.core.models.pricing import Promotion as Promotion
from quanyi.core.models.pricing import PromotionKind as PromotionKind
from quanyi.core.models.pricing import Stacking as Stacking
from quanyi.core.models.risk import BlockEntry as BlockEntry
from quanyi.core.models.risk import RiskAction as RiskAction
from quanyi.core.models.risk import RiskDecision as RiskDecision
from quanyi.core.models.risk import RiskRule as RiskRule
from quanyi.core.models.sales import ManualStatus as ManualStatus
from quanyi.core.models.sales import ManualTask as ManualTask
from quanyi.core.models.sales import Order as Order
from quanyi.core.models.sales import OrderLine as OrderLine
from quanyi.core.models.sales import OrderMessage as OrderMessage
from quanyi.core.models.sales import OrderStatus as OrderStatus
from quanyi.core.models.sales import Payment as Payment
from quanyi.core.models.sales import ProviderEvent as ProviderEvent
from quanyi.core.models.sales import Recharge as Recharge
from quanyi.core.models.sales import RechargeStatus as RechargeStatus
from quanyi.core.models.sales import RedeemStatus as RedeemStatus
from quanyi.core.models.sales import RedeemToken as RedeemToken
from quanyi.core.models.sales import Redemption as Redemption
from quanyi.core.models.sales import Refund as Refund
from quanyi.core.models.sales import RefundStatus as RefundStatus
from quanyi.core.models.staff import ConsoleSession as ConsoleSession
from quanyi.core.models.staff import LoginLink as LoginLink
from quanyi.core.models.staff import StaffMember as StaffMember
from quanyi.core.models.stock import Allocation as Allocation
from quanyi.core.models.stock import AllocationMode as AllocationMode
from quanyi.core.models.stock import StockBatch as StockBatch
from quanyi.core.models.stock import StockItem as StockItem
from quanyi.core.models.stock import StockStatus as StockStatus
from quanyi.core.models.support import Ticket as Ticket
from quanyi.core.models.support import TicketMessage as TicketMessage
from quanyi.core.models.support import TicketStatus as TicketStatus
