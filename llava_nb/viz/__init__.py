"Widget dashboards and static figures: attention maps, projector features, chat."
