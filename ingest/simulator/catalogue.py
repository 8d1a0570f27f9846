"""Static vocabulary of the demo district: place names, service types and request texts.

Everything here is fictional and contains no personal data. Request texts are templates whose only
slot is ``{unit}`` (a building unit number), so a served description can never name a person.
"""

from __future__ import annotations

from dataclasses import dataclass

DISTRICT_NAME = "明湖区"
CENTRE_LAT = 31.2050
CENTRE_LONG = 121.4700

STREET_NAMES: tuple[str, ...] = ("东湖街道", "西林街道", "南桥街道")
STREET_ZIPCODES: tuple[str, ...] = ("200231", "200232", "200233")
COMMUNITY_NAMES: tuple[str, ...] = (
    "幸福社区", "和平社区", "春晖社区", "翠竹社区",
    "金桥社区", "银杏社区", "枫林社区", "梅园社区",
    "兰苑社区", "书香社区", "新港社区", "绿洲社区",
)  # fmt: skip
ROAD_NAMES: tuple[str, ...] = (
    "幸福路", "和平路", "春晖路", "翠竹路", "金桥路", "银杏路", "枫林路", "梅园路",
    "兰苑路", "书香路", "新港路", "绿洲路", "明湖大道", "东湖路", "西林路", "南桥路",
)  # fmt: skip
COMPOUND_PREFIXES: tuple[str, ...] = (
    "锦绣", "华庭", "阳光", "翠苑", "景园", "康乐", "嘉和", "怡景", "丽都",
    "悦澜", "安居", "祥和", "瑞丰", "东方", "盛世", "玉兰", "金色", "星河",
)  # fmt: skip
COMPOUND_SUFFIXES: tuple[str, ...] = ("苑", "花园", "小区", "新村", "公寓", "家园")
PROPERTY_COMPANIES: tuple[str, ...] = (
    "明湖安居物业服务有限公司",
    "鑫诚物业管理有限公司",
    "锦华物业服务有限公司",
    "嘉园物业管理有限公司",
    "恒安物业服务有限公司",
    "宏达物业管理有限公司",
    "绿苑物业服务有限公司",
    "和顺物业管理有限公司",
)
SOCIAL_ORGANISATION = "明湖区乐龄为老服务中心"

# Responsible party kinds (→ Open311 agency_responsible, resolved per building).
STREET_OFFICE = "street_office"
RESIDENTS_COMMITTEE = "residents_committee"
PROPERTY_COMPANY = "property_company"
SOCIAL_ORG = "social_organisation"

CHANNELS: tuple[str, ...] = ("hotline", "wechat", "app", "property_desk", "walk_in")


@dataclass(frozen=True, slots=True)
class ServiceType:
    """One Open311 service (request type) offered by the district."""

    service_code: str
    service_name: str
    description: str
    group: str
    keywords: tuple[str, ...]
    responsible: str  # one of STREET_OFFICE, RESIDENTS_COMMITTEE, PROPERTY_COMPANY, SOCIAL_ORG
    sla_hours: int
    weight: float  # relative frequency among requests
    type: str = "realtime"

    @property
    def service_notice(self) -> str:
        return f"{self.service_name}类诉求承诺{self.sla_hours}小时内办结，超期将由街道督办。"

    def to_open311(self) -> dict[str, object]:
        return {
            "service_code": self.service_code,
            "service_name": self.service_name,
            "description": self.description,
            "metadata": False,
            "type": self.type,
            "keywords": ",".join(self.keywords),
            "group": self.group,
        }


SERVICE_TYPES: tuple[ServiceType, ...] = (
    ServiceType(
        "PROP_REPAIR", "物业维修", "住宅楼内及小区公共部位的设施设备报修（水电、电梯、门禁、屋面渗漏等）",
        "物业服务", ("维修", "漏水", "电梯", "门禁", "照明"), PROPERTY_COMPANY, 48, 25.0,
    ),
    ServiceType(
        "NOISE", "噪音扰民", "生活噪音、施工噪音、商业噪音等扰民问题",
        "环境秩序", ("噪音", "施工", "扰民", "广场舞"), RESIDENTS_COMMITTEE, 24, 12.0,
    ),
    ServiceType(
        "SANITATION", "垃圾清运与环境卫生", "垃圾分类投放点满溢、楼道杂物、卫生死角、污水外溢等",
        "环境卫生", ("垃圾", "分类", "卫生", "清运", "杂物"), PROPERTY_COMPANY, 24, 14.0,
    ),
    ServiceType(
        "PARKING", "停车管理", "占用消防通道、乱停乱放、长期占用车位等停车问题",
        "交通出行", ("停车", "车位", "消防通道", "非机动车"), PROPERTY_COMPANY, 48, 12.0,
    ),
    ServiceType(
        "NEIGHBOUR_DISPUTE", "邻里纠纷", "相邻关系、公共空间占用、宠物饲养等邻里矛盾的调解",
        "矛盾调解", ("邻里", "纠纷", "调解", "宠物"), RESIDENTS_COMMITTEE, 72, 7.0,
    ),
    ServiceType(
        "ELDERLY_CARE", "养老服务", "助餐、助浴、日间照料、紧急呼叫等居家和社区养老服务",
        "民生服务", ("养老", "助餐", "助浴", "日间照料", "独居"), SOCIAL_ORG, 72, 8.0,
    ),
    ServiceType(
        "FACILITY_DAMAGE", "公共设施损坏", "道路、路灯、井盖、健身器材、公交站台等公共设施损坏",
        "市政设施", ("路灯", "井盖", "人行道", "健身器材"), STREET_OFFICE, 120, 10.0,
    ),
    ServiceType(
        "SAFETY_HAZARD", "安全隐患", "消防、燃气、用电、高空坠物等安全隐患排查处置",
        "安全生产", ("消防", "燃气", "充电", "高空坠物"), STREET_OFFICE, 24, 5.0,
    ),
    ServiceType(
        "POLICY_ENQUIRY", "政策咨询", "社保、医保、入学、居住证、加装电梯、养老补贴等政策咨询",
        "政策咨询", ("咨询", "政策", "补贴", "办理"), RESIDENTS_COMMITTEE, 72, 7.0,
    ),
)  # fmt: skip

SERVICE_BY_CODE: dict[str, ServiceType] = {s.service_code: s for s in SERVICE_TYPES}

# Services a building with a chronic problem tends to complain about repeatedly.
HOTSPOT_SERVICES: tuple[str, ...] = ("PROP_REPAIR", "NOISE", "SANITATION", "PARKING", "SAFETY_HAZARD")

DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "PROP_REPAIR": (
        "{unit}单元楼道声控灯不亮，晚上上下楼很不方便，请物业尽快维修。",
        "家里卫生间顶部渗水，怀疑是楼上管道漏水，请物业上门查看。",
        "电梯近一周多次故障停运，上下楼困难，希望尽快检修。",
        "{unit}单元门禁损坏，外来人员可随意进出，请尽快修复。",
        "楼顶防水层老化，下雨天顶楼墙面渗水严重。",
        "小区供水水压不稳定，早晚高峰经常断水。",
        "楼道窗户玻璃破损，冬天漏风，请尽快更换。",
    ),
    "NOISE": (
        "楼上住户夜间经常拖动家具，噪音影响休息。",
        "小区附近工地夜间施工，噪音很大，严重影响居民休息。",
        "广场舞音响声音过大，持续到晚上十点以后。",
        "临街商铺使用高音喇叭促销，噪音扰民。",
        "{unit}单元有住户装修，周末一早就开始电钻施工。",
    ),
    "SANITATION": (
        "垃圾分类投放点垃圾满溢未及时清运，气味很大。",
        "楼道内堆放大量杂物和纸箱，影响通行。",
        "小区绿化带内有积水和垃圾，滋生蚊虫。",
        "建筑垃圾堆放在小区道路旁多日无人清理。",
        "化粪池外溢，污水流到小区道路上。",
    ),
    "PARKING": (
        "消防通道被私家车长期占用，请尽快处理。",
        "小区门口有车辆长期停放，堵住出入口。",
        "外来车辆随意停放，业主无车位可停。",
        "废弃车辆长期占用公共车位，请协调清理。",
        "非机动车棚车辆停放混乱，通道堵塞。",
    ),
    "NEIGHBOUR_DISPUTE": (
        "楼上空调外机滴水到阳台，多次沟通未果，请居委会协调。",
        "邻居在公共楼道堆放物品，协商不成，希望社区调解。",
        "对门饲养的犬只外出未拴绳，经常吓到孩子，请协调。",
        "相邻住户违规搭建，影响采光，双方有矛盾。",
    ),
    "ELDERLY_CARE": (
        "家中老人独居，行动不便，申请助餐送餐服务。",
        "咨询社区日间照料中心的入托条件和费用。",
        "希望为高龄老人安装紧急呼叫设备。",
        "申请居家养老上门助浴和保洁服务。",
        "老人需要定期上门测量血压，希望安排家庭医生随访。",
    ),
    "FACILITY_DAMAGE": (
        "小区门口人行道地砖松动破损，容易绊倒。",
        "路灯不亮已经一周，夜间出行不安全。",
        "健身器材螺丝松动损坏，请尽快维修。",
        "道路井盖破损下沉，车辆经过有异响。",
        "公交站台雨棚损坏，下雨天无法避雨。",
    ),
    "SAFETY_HAZARD": (
        "有住户将电动自行车推进楼道充电，存在火灾隐患。",
        "楼道消防栓箱内灭火器过期，请检查更换。",
        "高处有松动的空调外机支架，担心坠落伤人。",
        "小区燃气管道附近闻到异味，请尽快排查。",
        "老旧电线裸露在外，下雨天可能漏电。",
    ),
    "POLICY_ENQUIRY": (
        "咨询老旧小区加装电梯的申请流程和补贴政策。",
        "咨询居住证办理需要准备哪些材料。",
        "咨询高龄津贴的申领条件。",
        "咨询新生儿医保参保登记流程。",
        "咨询适龄儿童入学报名的时间和材料。",
        "咨询灵活就业人员社保缴纳政策。",
    ),
}

CLOSE_NOTES: dict[str, tuple[str, ...]] = {
    "PROP_REPAIR": ("维修人员已上门处理完毕，经回访问题已解决。", "已更换损坏部件，设施恢复正常。"),
    "NOISE": ("已上门劝导，噪音问题已停止。", "已联系相关单位，承诺调整作业时间。"),
    "SANITATION": ("已安排保洁清运完毕。", "已清理杂物并加强巡查。"),
    "PARKING": ("已联系车主挪车，通道已恢复畅通。", "已张贴告知并加强停车巡查。"),
    "NEIGHBOUR_DISPUTE": ("居委会已组织双方调解，达成一致。", "经调解双方已协商解决。"),
    "ELDERLY_CARE": ("已上门评估并纳入服务名单。", "已安排服务人员上门，服务已开始。"),
    "FACILITY_DAMAGE": ("已通知养护单位修复完毕。", "已完成维修并验收。"),
    "SAFETY_HAZARD": ("已现场排查并消除隐患。", "已责令整改，复查合格。"),
    "POLICY_ENQUIRY": ("已电话答复政策要求及办理流程。", "已告知所需材料和办理地点。"),
}

NOTE_RECEIVED = "已受理，待派单。"
NOTE_DISPATCHED = "已派单至{agency}。"
NOTE_OVERDUE = "已超期，街道已督办。"
NOTE_ESCALATED = "已升级至{office}处理。"
NOTE_FOLLOW_UP = "处理中，持续跟进。"
NOTE_REOPENED = "居民反映问题未解决，重新受理。"
NOTE_RECHECKED = "复查后已处理完毕。"
