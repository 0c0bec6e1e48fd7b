import os

from django.core.asgi import get_asgi_application

from scrm.startup import startup_objects_freeze

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings")

application = get_asgi_application()
startup_objects_freeze()
