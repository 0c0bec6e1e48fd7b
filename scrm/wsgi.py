import os

from django.core.wsgi import get_wsgi_application

from scrm.startup import startup_objects_freeze

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings")

application = get_wsgi_application()
startup_objects_freeze()
