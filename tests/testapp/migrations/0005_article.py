from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("testapp", "0004_bookmark"),
    ]

    operations = [
        migrations.CreateModel(
            name="Article",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("slug", models.SlugField(unique=True)),
                ("title", models.CharField(max_length=200)),
            ],
        ),
    ]
