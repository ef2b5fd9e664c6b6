from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create USERNAME if needed and print only its API token key."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user, _ = get_user_model()._default_manager.get_or_create(username=username)
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
