from django.http import HttpRequest

from governance.roles import role_of


def roles(request: HttpRequest) -> dict[str, object]:
    role = role_of(request.user)
    return {
        "user_role": role,
        "can_see_reports": role in ("manager", "admin"),
        "can_govern": role == "admin",
    }
